"""medmix.evaluate"""
