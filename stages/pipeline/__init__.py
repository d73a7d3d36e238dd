"""What ties stages to conf/ and DVC: composing params.yaml, reading it back, stage entries."""
