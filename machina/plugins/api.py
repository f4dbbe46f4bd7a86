"""placeholder"""
def run_plugin(name, source, inputs, ctx):
    raise NotImplementedError
