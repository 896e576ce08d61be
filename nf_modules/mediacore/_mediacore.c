#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyModuleDef_Slot mediacore_slots[] = {{0, NULL}};

static struct PyModuleDef mediacore_module = {
    PyModuleDef_HEAD_INIT, "_mediacore", "C media core", 0, NULL, mediacore_slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__mediacore(void) { return PyModuleDef_Init(&mediacore_module); }
