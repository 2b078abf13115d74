"""medmix.train"""
