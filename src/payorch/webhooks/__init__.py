"""Events to merchants (signed webhook deliveries) and notifications from gateways (DESIGN.md section 9)."""
