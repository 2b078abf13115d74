"""medmix.lineage"""
