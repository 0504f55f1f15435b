"""drseg.engine"""
