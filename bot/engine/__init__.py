"""The conversation engine: keywords, sign-up, the survey runner and waves."""
