"""medmix.data.ingest"""
