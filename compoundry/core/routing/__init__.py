"""Request-path policies: A/B split and variants, modes, priority lanes, breakers, balancing, retries."""
