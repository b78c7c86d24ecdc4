"""HTTP routes, grouped by what they serve; each module has `setup(app)`."""
