"""Per-merchant gateway accounts: credentials sealed with envelope encryption, resolved per charge
from a per-process cache (DESIGN.md section 5, docs/routing.md)."""
