"""The 10 prompts of the greedy comparisons with the peers (6 raw texts, 4 conversations), shared
by tools/make_model_fixtures.py, tools/compare_greedy_llama_cpp.py and tools/compare_hf_greedy.py."""

RAW_PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Once upon a time, in a small village by the sea,",
    "Here is a list of the planets of the solar system:\n1.",
    "Die Hauptstadt von Deutschland ist",
    "Q: What is 12 times 7?\nA:",
]
CHAT_PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a haiku about the ocean."}],
    [{"role": "system", "content": "You are a terse assistant."}, {"role": "user", "content": "Name three primary colors."}],
    [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello! How can I help you today?"},
     {"role": "user", "content": "Explain what a neural network is in one sentence."}],
]
