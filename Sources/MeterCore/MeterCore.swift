public enum MeterCore {}
