"""Reading recordings back: loading, data quality, factor sensitivity, the HTML report."""
