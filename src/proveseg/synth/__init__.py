"""The synthetic adverse-weather benchmark: procedural scenes, weather, simulated generators."""
