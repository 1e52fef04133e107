"""BentoML services, one build context per engine (embedding, pyfunc, llm); see bentos/build.py."""
