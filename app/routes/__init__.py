"""HTTP routes, one router per resource; each stays thin: HTTP in, HTTP out."""
