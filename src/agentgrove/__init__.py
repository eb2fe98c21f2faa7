"""agentgrove: orchestrate teams of LLM coding agents through the Claude Agent SDK."""

__version__ = "0.1.0"
