"""Tools for choosing levels: replay charts, level sweeps and shock stress tests."""
