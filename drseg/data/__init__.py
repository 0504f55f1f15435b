"""drseg.data"""
