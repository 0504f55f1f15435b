"""drseg.reports"""
