"""Tamper-evident audit trail (DESIGN.md section 8): events, redaction, outbox, hash chain, sinks."""
