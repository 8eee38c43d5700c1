"""Registration and cropping: align a field's DIC and brightfield, find and crop the cells."""
