"""medmix.data"""
