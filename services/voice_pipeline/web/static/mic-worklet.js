// Runs on the audio thread: hands the microphone's samples (at the context's rate, 16 kHz) to the
// page in 60 ms frames, so the main thread wakes 16 times a second instead of 125.
class MicFrames extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.size = options.processorOptions.frameSamples;
    this.buf = new Float32Array(this.size);
    this.fill = 0;
  }
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    let i = 0;
    while (i < channel.length) {
      const n = Math.min(channel.length - i, this.size - this.fill);
      this.buf.set(channel.subarray(i, i + n), this.fill);
      this.fill += n;
      i += n;
      if (this.fill === this.size) {
        this.port.postMessage(this.buf, [this.buf.buffer]);
        this.buf = new Float32Array(this.size);
        this.fill = 0;
      }
    }
    return true;
  }
}
registerProcessor("mic-frames", MicFrames);
