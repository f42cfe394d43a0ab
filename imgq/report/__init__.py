"""Review reports (grids, plots, an HTML page) and result queries."""
