"""payorch: payment orchestration across several gateways without ever charging a customer twice."""

__version__ = "0.1.0"
