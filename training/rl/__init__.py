"""RL with verifiable rewards: GRPO, rollouts and their generators (HF, vLLM), RLVR prompts, and
the verifiers.
"""
