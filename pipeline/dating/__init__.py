"""Dating a questioned image in calendar time from a device's trusted, dated images."""
