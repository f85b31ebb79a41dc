"""The embedded offline stack: Whisper ASR, Piper/espeak TTS, Silero/WebRTC VAD, with model
files that ship inside PyPI packages (nothing is downloaded at run time)."""
