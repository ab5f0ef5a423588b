"""One module per benchmark stage; each has ``run(env, plan) -> dict`` of figures and details."""
