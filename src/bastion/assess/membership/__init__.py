"""Membership-inference attacks: does a model reveal which records it was trained on?"""
