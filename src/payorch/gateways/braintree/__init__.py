"""Braintree gateway adapter (official SDK) and its pure wire mapping."""

from payorch.gateways.braintree.adapter import BraintreeAdapter

__all__ = ["BraintreeAdapter"]
