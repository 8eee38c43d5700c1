"""What every HTTP app shares: one error hierarchy and body, API keys with roles."""
