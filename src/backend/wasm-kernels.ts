/**
 * Gradient kernels that make the WebAssembly backend able to train.
 * (Placeholder: being written; registers nothing yet.)
 */
export function registerWasmTrainingKernels(): void {}
