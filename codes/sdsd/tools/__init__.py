"""sdsd.tools."""
