"""medmix.tune"""
