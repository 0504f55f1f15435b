"""drseg.models"""
