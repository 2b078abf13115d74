"""medmix.serve"""
