"""What clusterctl knows about llama.cpp: capabilities, commands, logs, models, HTTP."""
