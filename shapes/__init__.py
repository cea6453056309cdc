"""The shapes world: a procedural scene generator, a pixel evaluator and a tiny trained SD1.5-shaped model."""
