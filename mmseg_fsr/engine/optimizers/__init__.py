from .wsss_optim_wrapper_constructor import WSSSOptimWrapperConstructor  # noqa: F401,E501
