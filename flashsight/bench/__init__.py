"""`flashsight bench`: a load generator for any OpenAI-compatible server, on the reference
workloads (W1, W2, W1-repeat). It never imports flashsight's engine or server, so it measures
vLLM, SGLang, llama-server, Ollama or TGI just as it measures flashsight."""
