"""Training: state, optimizer, compiled steps and the loop."""
