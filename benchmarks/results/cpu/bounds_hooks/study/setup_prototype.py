from setuptools import setup, Extension
setup(name="f", ext_modules=[Extension("_front", ["_front.c"], extra_compile_args=["-O2"])])
