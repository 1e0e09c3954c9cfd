"""Bytes per weight of the base's linear layers, by storage format."""

# NF4 with double quantization: 4 bits a weight, one 8-bit absmax per block of
# 64, one fp32 absmax per 256 of those (bitsandbytes' layout).
NF4_BYTES_PER_PARAM = 0.5 + 1 / 64 + 4 / (64 * 256)

# vLLM quantization method → bytes per weight of the decoder's linear layers
QUANTIZED_BYTES = {
    "bitsandbytes": NF4_BYTES_PER_PARAM,
    "fp8": 1.0,
    "int8": 1.0,
    "awq": 0.5 + 4 / 128,  # 4 bits, fp16 scale and zero per group of 128
    "gptq": 0.5 + 4 / 128,
}
