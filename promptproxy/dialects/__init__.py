"""Client-facing API dialects: other vendors' wire formats translated to and from OpenAI chat."""
