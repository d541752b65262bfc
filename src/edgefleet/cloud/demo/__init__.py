"""``fleet demo``: a whole fleet on one machine — broker, controller, agents, two models."""
