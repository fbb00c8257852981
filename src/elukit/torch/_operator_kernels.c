/* The compiled kernels of elukit._exponential_linear without Python, for elukit.torch's operator
   library (_operators.cpp): the same source, so the operators give the Python module's bits. */
#define ELUKIT_KERNELS_ONLY
#include "../_exponential_linear.c"
