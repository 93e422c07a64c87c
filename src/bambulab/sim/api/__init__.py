"""HTTP endpoints of the simulated cloud, one module per area of the API."""
