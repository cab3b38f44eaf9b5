"""Operations: the supervised engine process (and, beside it, the audit log and metrics)."""
