FROM <image> AS <stage_name>
