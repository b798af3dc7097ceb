"""Local serving: build the model pairs offline, run vLLM student and teacher servers, `cascade up`."""
