"""sdsd.utils."""
