"""medmix.model"""
