"""The run layer: run folders, sessions (train, resume, evaluate, import), exports."""
